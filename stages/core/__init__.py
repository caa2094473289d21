"""The library behind the stage entry points: pure functions plus the few modules that touch the world."""
