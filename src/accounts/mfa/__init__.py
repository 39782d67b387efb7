"""Second factors of a password login: TOTP (RFC 6238) and single-use recovery codes; passkeys are their own package."""
