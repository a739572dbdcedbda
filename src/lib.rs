//! plugsync
