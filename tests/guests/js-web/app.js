// A JavaScript service: componentize-js turns this module into a component
// of the `js-web` world (wit/js-web.wit).
import { service } from 'sp2a:rps/host@0.1.0';
import { log } from 'sp2a:rps/log@0.1.0';

export const api = {
  greet(name) {
    const me = service();
    return `Hello, ${name}! This is ${me.name} ${me.version}, in JavaScript.`;
  },

  // Exported functions may be async: the component runs the event loop
  // until the promise settles.
  async fetchText(url) {
    let response;
    try {
      response = await fetch(url);
    } catch (error) {
      log('warn', 'fetch failed', [['url', url], ['error', String(error)]]);
      throw `fetch failed: ${error}`;
    }
    return `${response.status} ${await response.text()}`;
  },
};
