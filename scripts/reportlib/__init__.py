"""The report of h200-mpibench results files (scripts/report.py): load.py reads a file into
tables, figures.py recomputes every figure from the raw datasets, charts.py draws them,
tables.py writes the CSV files, render.py the Markdown and HTML."""
