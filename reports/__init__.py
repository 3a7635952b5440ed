"""Report rendering: seaborn figures (``reports.figures``) and, later, HTML/Markdown reports."""
