"""Report rendering: seaborn figures (``reports.figures``), Pillow montages of examples
(``reports.montage``) and the HTML/Markdown report (``reports.render``)."""
