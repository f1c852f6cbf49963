// The Vector stand-in ships with the package (the CLI's `receive` and `demo`); tests use the same one.
export * from '../../lib/tools/receiver';
