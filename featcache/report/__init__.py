"""What `featcache compare --out` writes for people: charts (charts.py) and one self-contained
report.html (html.py); backbone cost figures (cost.py)."""
