"""Tests of the media service over a real gRPC channel against a real object store."""
