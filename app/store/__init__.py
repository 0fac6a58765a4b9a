"""Tables, the ChatKit Store and the task repository: the only SQL in the app."""
