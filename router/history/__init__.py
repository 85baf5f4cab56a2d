"""Event history: the archive stream every accepted event is kept in for days, searching it
from a timestamp, and replaying a window of it to one application as a job."""
