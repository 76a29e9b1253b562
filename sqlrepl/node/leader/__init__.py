"""The leader role's components; `role` ties them together, `api` serves them."""
