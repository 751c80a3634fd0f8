"""An example host application: a small BI tool's web front that uses notifymail for
password resets and alerts. See ``app.py``.
"""
