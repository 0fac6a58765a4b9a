"""The ChatKit server: RequestContext, respond(), stream safety."""
