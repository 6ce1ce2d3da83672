"""Database: declarative base, models, session handling (one transaction owner per unit of work)."""
