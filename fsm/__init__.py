"""The leader-election state machine: pure, no I/O."""
