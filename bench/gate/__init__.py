"""The regression gate (`bench check`): rules, baseline files, comparison, Markdown/JUnit rendering."""
