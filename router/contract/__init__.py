"""What the router and its consumers agree on: every name and header, the 11 event types and
their parsing, example events, the webhook signature, and masking of subscriber data."""
