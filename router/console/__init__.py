"""The ops console: pages served by the admin listener."""
