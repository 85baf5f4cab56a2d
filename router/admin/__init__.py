"""The admin API (an aiohttp application behind a token): claims and parked events, and the
client the CLI and the workers use to reach it."""
