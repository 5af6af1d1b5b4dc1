//! Unit tests of the broker core: every command and every error path, with a fake clock.

use super::*;
