//! Reference binaries for rollout; see the `[[example]]` entries of this package.
