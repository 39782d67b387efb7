"""Passkeys: WebAuthn credentials a user registers, and the ceremonies that make and use them."""
