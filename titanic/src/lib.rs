//! Titanic (rfc.zeromq.org spec 9): disconnected reliability on top of MDP.
