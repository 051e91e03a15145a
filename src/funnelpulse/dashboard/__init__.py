"""The Streamlit dashboard; `data` holds every query so pages stay thin and testable."""
