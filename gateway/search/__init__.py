"""Search: the SearchParameter registry, index extraction at write time, and query planning."""
