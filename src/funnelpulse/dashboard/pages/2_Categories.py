"""Categories: revenue and rates per category root over time."""

from funnelpulse.dashboard._segment_page import render

render("Categories", "category_root", "Category")
