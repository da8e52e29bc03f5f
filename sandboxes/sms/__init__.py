"""The sandbox SMS gateway: signed sends, delivery receipts pushed by signed callback and pollable, test numbers."""
