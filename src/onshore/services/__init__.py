"""Services: the rules of each domain. No protobuf or grpclib below this package's callers."""
