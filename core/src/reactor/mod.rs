//! The edge-triggered epoll event loop.
