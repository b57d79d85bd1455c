"""Shared test helpers: standard source trees and tree snapshots (pure stdlib)."""
