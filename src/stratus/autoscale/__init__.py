"""Autoscaling policies, pure: they read load samples and a clock they are given, and do no I/O."""
