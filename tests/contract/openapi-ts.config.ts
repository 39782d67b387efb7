// @hey-api/openapi-ts settings for `make clients`: the TypeScript SDK of the Accounts API in generated/ts.
import { defineConfig } from '@hey-api/openapi-ts';

export default defineConfig({
  input: './openapi.json',
  output: {
    path: './generated/ts',
    // `.js` in relative imports: the SDK compiles under `moduleResolution: NodeNext` as well as `Bundler`.
    module: { extension: '.js' },
  },
  // Console output only: no log files left in this folder when a run fails.
  logs: { file: false },
  plugins: ['@hey-api/client-fetch', '@hey-api/typescript', '@hey-api/sdk'],
});
