"""Third-party API clients. Each connector knows HTTP and its API, nothing of our database or sync logic."""
