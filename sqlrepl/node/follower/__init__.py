"""The follower role's components; `role` ties them together, `api` serves them."""
