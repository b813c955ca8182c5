"""Dispatch: leasing, worker sessions, the reaper, and the operations every edge offers."""
