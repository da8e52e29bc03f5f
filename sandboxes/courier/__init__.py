"""The sandbox courier: waybills, pick-up, tracking events pushed by signed callback and pollable."""
