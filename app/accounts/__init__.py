"""Accounts domain: Kommo integrations (OAuth, tokens, webhooks), the Unisender credential, account views."""
