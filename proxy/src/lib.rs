//! Client side of multiproc managers: typed proxies to objects a manager server owns.
