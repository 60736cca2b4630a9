"""headend"""
