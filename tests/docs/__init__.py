"""The documentation: its code blocks run, its SQL API page is true, the site works offline."""
