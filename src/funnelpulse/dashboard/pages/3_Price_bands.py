"""Price bands: revenue and rates per price band over time."""

from funnelpulse.dashboard._segment_page import render

render("Price bands", "price_band", "Price band")
