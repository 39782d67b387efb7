"""Webhooks (Standard Webhooks): endpoints admins register, signed deliveries of the events they ask for, at least
once and in order per subject, through the job queue (accounts.webhooks.jobs, accounts.webhooks.dispatch)."""
