"""The original MInt distributed-computing protocol, on each side it touches.

`codec/` is pure encoding; `server/` serves its routes over our store; `client`, `wf` and the
`poller` adapter are our tools that speak it; `ini` reads the original server's config file.
"""
