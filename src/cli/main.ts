#!/usr/bin/env node
console.log('slipway: not built yet');
