"""Accounts, devices, access tokens and password hashing."""
