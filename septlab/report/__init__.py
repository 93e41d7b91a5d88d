"""`septlab report`: one self-contained HTML page from a `septlab compare --json` result (report/html.py)."""
