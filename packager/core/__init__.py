"""Pure verification core: bytes in, verified objects out. No disk, network or clock reads."""
