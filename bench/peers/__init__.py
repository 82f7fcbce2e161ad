"""What a user would build instead of ttbridge, run by the benchmark on the same broker and data.
Optional: `pip install -e '.[peers]'`; without it the benchmark says the peer was skipped."""
