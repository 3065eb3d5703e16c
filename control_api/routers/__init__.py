"""Routers: parse, call one service, return a schema."""
