/** The worker thread of the OpenAI endpoint (see http-bridge.ts): the HTTP server, its parsing and its writes. */
import { parentPort, workerData } from 'node:worker_threads'
import { reportListening, WorkerTextService } from './http-bridge.js'
import { OpenAiHttp, type OpenAiHttpOptions } from './openai-http.js'

const data = workerData as { options: OpenAiHttpOptions; model: string; text: boolean }
const port = parentPort!
const service = new WorkerTextService(port, data.model, data.text)
OpenAiHttp.listen(service, data.options).then(
  (http) => {
    service.onClose = () => {
      http.close().then(() => port.close())
    }
    reportListening(port, { port: http.port })
  },
  (e: unknown) => {
    reportListening(port, { error: e instanceof Error ? e.message : String(e) })
    port.close()
  },
)
