// A js-libp2p Kademlia client: asks the DHT (on the sp2a protocol id) for
// the providers of a CID and prints their peer ids as JSON.
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT } from '@libp2p/kad-dht'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'

// Node 20 lacks Promise.withResolvers, which current js-libp2p uses.
Promise.withResolvers ??= () => {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

const [address, cidText] = process.argv.slice(2)
const node = await createLibp2p({
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({
      protocol: '/sp2a/kad/1.0.0',
      clientMode: true,
      // Keep loopback addresses: the test runs on one host.
      peerInfoMapper: (peer) => peer,
    }),
  },
})
await node.start()
await node.dial(multiaddr(address))
const found = new Set()
const signal = AbortSignal.timeout(15000)
try {
  for await (const event of node.services.dht.findProviders(CID.parse(cidText), { signal })) {
    if (event.name === 'PROVIDER') {
      for (const provider of event.providers) found.add(provider.id.toString())
    }
    if (found.size > 0) break
  }
} catch (e) {
  console.error(`lookup ended: ${e.message}`)
}
console.log(JSON.stringify([...found]))
await node.stop()
