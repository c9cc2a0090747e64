"""Streamlit entry in a source checkout: `streamlit run ui/app.py`.

The dashboard ships in the package as `anomaly.ui.app` (`anomaly ui` runs that file).
"""

from anomaly.ui.app import main

main()
