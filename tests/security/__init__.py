"""Security: access levels, attacks, and hostile input."""
