"""In-process tests of one part at a time: real git, real bubblewrap, real SQLite and
PostgreSQL, the app served on loopback where a test needs HTTP; a simulator only where the
part under test is a client of it (the agent loop against the scripted Claude)."""
